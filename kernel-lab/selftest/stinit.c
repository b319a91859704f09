// /init for the selftest guest (see README.md): mount, load the vfio modules (finit_module,
// dependency order), bind ivshmem-plain and pci-testdev to vfio-pci, run /vfio_pci_dmabuf_test
// once per device, print kernel warnings, power off. Not part of the kernel patch.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/klog.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *mods[][2] = {
	{ "irqbypass", "" }, { "iommufd", "" }, { "vfio", "" },
	{ "vfio_iommu_type1", "allow_unsafe_interrupts=1" },
	{ "vfio-pci-core", "" }, { "vfio-pci", "" },
};

static int wr(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY), r;

	if (fd < 0)
		return -errno;
	r = write(fd, s, strlen(s)) < 0 ? -errno : 0;
	close(fd);
	return r;
}

static int rd(const char *path, char *buf, size_t n)
{
	int fd = open(path, O_RDONLY), r;

	if (fd < 0)
		return -1;
	r = read(fd, buf, n - 1);
	close(fd);
	buf[r > 0 ? r : 0] = 0;
	return r;
}

int main(void)
{
	static char buf[1 << 20];
	char bdfs[4][64], names[4][32], p[256], cmdline[512] = "";
	int nb = 0;
	struct utsname u;
	DIR *dir;
	struct dirent *e;

	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	mount("tmpfs", "/tmp", "tmpfs", 0, NULL);
	mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL);
	rd("/proc/cmdline", cmdline, sizeof(cmdline));
	uname(&u);
	printf("STINIT: release %s\n", u.release);
	for (unsigned i = 0; i < sizeof(mods) / sizeof(mods[0]); i++) {
		snprintf(p, sizeof(p), "/lib/modules/%s.ko", mods[i][0]);
		int fd = open(p, O_RDONLY);
		long r;

		if (fd < 0)
			continue;
		r = syscall(SYS_finit_module, fd, mods[i][1], 0);
		printf("STINIT: load %s: %s\n", mods[i][0], r ? strerror(errno) : "ok");
		close(fd);
	}
	dir = opendir("/sys/bus/pci/devices");
	while (dir && (e = readdir(dir)) && nb < 4) {
		char v[16], d[16];
		const char *name = NULL;

		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/vendor", e->d_name);
		if (rd(p, v, sizeof(v)) <= 0)
			continue;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/device", e->d_name);
		rd(p, d, sizeof(d));
		if (!strncmp(v, "0x1af4", 6) && !strncmp(d, "0x1110", 6))
			name = "ivshmem-plain";
		if (!strncmp(v, "0x1b36", 6) && !strncmp(d, "0x0005", 6))
			name = "pci-testdev";
		if (!name)
			continue;
		snprintf(bdfs[nb], sizeof(bdfs[nb]), "%s", e->d_name);
		snprintf(names[nb], sizeof(names[nb]), "%s", name);
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/driver/unbind", e->d_name);
		wr(p, e->d_name);
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/driver_override", e->d_name);
		wr(p, "vfio-pci");
		printf("STINIT: bind %s %s: %d\n", name, e->d_name,
		       wr("/sys/bus/pci/drivers_probe", e->d_name));
		nb++;
	}
	for (int i = 0; i < nb; i++) {
		pid_t pid;
		int status = 0;

		printf("STINIT: ===== run %s %s\n", names[i], bdfs[i]);
		fflush(stdout);
		pid = fork();
		if (!pid) {
			char *argv[] = { "/vfio_pci_dmabuf_test", bdfs[i], NULL };

			execv(argv[0], argv);
			_exit(127);
		}
		waitpid(pid, &status, 0);
		printf("STINIT: ===== exit %s %d\n", names[i], WEXITSTATUS(status));
	}
	int n = klogctl(3, buf, sizeof(buf) - 1);

	if (n > 0) {
		buf[n] = 0;
		for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n"))
			if (strstr(l, "WARNING") || strstr(l, "BUG") || strstr(l, "Oops") ||
			    strstr(l, "KASAN") || strstr(l, "DMA-API") || strstr(l, "vfio") ||
			    strstr(l, "iommufd"))
				printf("STINIT: dmesg: %s\n", l);
	}
	printf("STINIT: done\n");
	fflush(stdout);
	sync();
	reboot(RB_POWER_OFF);
	return 0;
}
