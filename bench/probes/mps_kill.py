"""Probe, on a GPU machine: does a launcher killed with -9 take its MPS daemon with it?

    python3 bench/probes/mps_kill.py

A holder process enters `runtime.mps.gpu_sharing` (which starts the run's own daemon) and a CUDA
client connects to that daemon; the holder is then killed with SIGKILL. The daemon and its
server must be gone a few seconds later (they get SIGTERM when their parent dies). Prints the
MPS processes before and after. Record: bench/results/20261203T1436-mps-1gpu-h200/mps-kill.txt.
"""
import os, subprocess, sys, time, signal
holder = """
import os, time, torch
from onepiece_hpc.runtime.mps import gpu_sharing
with gpu_sharing(os.environ) as env:
    os.environ.update(env)
    print("ready", flush=True)
    time.sleep(300)
"""
client = "import torch,time; x=torch.ones(4,device='cuda'); print('client sum', x.sum().item(), flush=True); time.sleep(300)"
proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
print(proc.stdout.readline().strip())
pipe = [l for l in os.listdir("/tmp") if l.startswith("onepiece-mps-")]
env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": f"/tmp/{pipe[0]}/pipe"}
c = subprocess.Popen([sys.executable, "-c", client], env=env, stdout=subprocess.PIPE, text=True)
print(c.stdout.readline().strip())
print(subprocess.run("ps -eo pid,ppid,comm | grep -i mps", shell=True, capture_output=True, text=True).stdout)
proc.send_signal(signal.SIGKILL); proc.wait()
time.sleep(5)
print("after kill -9 of the launcher, 5 s:")
print(subprocess.run("ps -eo pid,ppid,stat,comm | grep -i -E 'mps|python'", shell=True, capture_output=True, text=True).stdout)
c.kill(); c.wait(); time.sleep(3)
print("after the client ended too:")
print(subprocess.run("ps -eo pid,ppid,stat,comm | grep -i mps", shell=True, capture_output=True, text=True).stdout or "no MPS process left")
