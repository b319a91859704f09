#!/bin/bash -eu
# ClusterFuzzLite entry point: the real script lives with the targets.
exec "$SRC/nr-ranges/fuzz/build.sh"
