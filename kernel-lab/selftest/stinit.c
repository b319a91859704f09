// SPDX-License-Identifier: GPL-2.0-only
// /init of `kernel-lab selftest`'s guest (see README.md). Not part of the kernel patch series.
//
// Mounts the pseudo file systems, loads the vfio modules found in /lib/modules (in dependency
// order: the initramfs has no modprobe), binds ivshmem-plain and pci-testdev to vfio-pci, runs
// /vfio_pci_dmabuf_test once per device, prints the kernel log lines that report a problem,
// and powers off. Everything it prints goes to the virtio-serial port named "nrlab" when there
// is one (the host parses that file: no kernel message can split a TAP line there), else to
// the console. The host's parser (kernel-lab/src/selftest.rs) reads the "STINIT:" lines.
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

// iommufd is built in (lab kernels) or absent (Debian's cloud kernels); it is tried in case a
// kernel has it as a module.
static const char *mods[][2] = {
	{ "irqbypass", "" }, { "iommufd", "" }, { "vfio", "" },
	{ "vfio_iommu_type1", "allow_unsafe_interrupts=1" },
	{ "vfio-pci-core", "" }, { "vfio-pci", "" },
};

// The kernel log lines worth the host's attention. "vfio" is not among them: vfio-pci logs
// every reset.
static const char *const bad[] = {
	"WARNING", "BUG", "Oops", "KASAN", "UBSAN", "DMA-API", "lockdep", "circular locking",
	"kmemleak", "Call Trace",
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

// Points stdout and stderr at the "nrlab" port (no udev: found through sysfs).
static void to_port(void)
{
	DIR *dir = opendir("/sys/class/virtio-ports");
	struct dirent *e;
	char p[300], name[64];

	while (dir && (e = readdir(dir))) {
		snprintf(p, sizeof(p), "/sys/class/virtio-ports/%s/name", e->d_name);
		if (rd(p, name, sizeof(name)) <= 0 || strncmp(name, "nrlab", 5))
			continue;
		snprintf(p, sizeof(p), "/dev/%s", e->d_name);
		int fd = open(p, O_WRONLY);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		break;
	}
	if (dir)
		closedir(dir);
}

int main(void)
{
	static char buf[1 << 20];
	char bdfs[4][256], names[4][32], p[512];
	int nb = 0;
	struct utsname u;
	DIR *dir;
	struct dirent *e;

	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	mount("tmpfs", "/tmp", "tmpfs", 0, NULL);
	// iommufd_map_one_range reads the Intel IOMMU's page tables there.
	mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL);
	to_port();
	uname(&u);
	printf("STINIT: release %s\n", u.release);
	for (unsigned int i = 0; i < sizeof(mods) / sizeof(mods[0]); i++) {
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
	if (dir)
		closedir(dir);
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
		if (WIFEXITED(status))
			printf("STINIT: ===== exit %s %d\n", names[i], WEXITSTATUS(status));
		else
			printf("STINIT: ===== signal %s %d\n", names[i], WTERMSIG(status));
	}
	int n = klogctl(3, buf, sizeof(buf) - 1);

	if (n > 0) {
		buf[n] = 0;
		for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n"))
			for (unsigned int i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
				if (strstr(l, bad[i])) {
					printf("STINIT: dmesg: %s\n", l);
					break;
				}
	}
	printf("STINIT: done\n");
	fflush(stdout);
	fsync(1);
	sync();
	reboot(RB_POWER_OFF);
	return 0;
}
