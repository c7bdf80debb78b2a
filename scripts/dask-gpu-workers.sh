#!/usr/bin/env bash
# Start one Dask worker per GPU of this host for `align collect --scheduler ADDRESS`: each sees only its
# own GPU (CUDA_VISIBLE_DEVICES), runs one case at a time (--nthreads 1) and offers the resource GPU=1
# that align's case tasks ask for. Prints the workers' process ids; stop them with kill PID.
#   scripts/dask-gpu-workers.sh ADDRESS [N_GPUS]
set -euo pipefail
ADDRESS=${1:?usage: scripts/dask-gpu-workers.sh ADDRESS [N_GPUS]}
N=${2:-$(nvidia-smi --list-gpus | wc -l)}
PY=${PYTHON:-python3}
for ((i = 0; i < N; i++)); do
  CUDA_VISIBLE_DEVICES=$i $PY -m distributed.cli.dask_worker "$ADDRESS" --nthreads 1 --nworkers 1 \
    --resources GPU=1 --name "$(hostname)-gpu$i" > "${TMPDIR:-/tmp}/dask-worker-gpu$i.log" 2>&1 &
  echo $!
done
