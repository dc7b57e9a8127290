"The machine a benchmark ran on, for its results file."
import os, platform
from datetime import datetime, timezone
from pathlib import Path

import torch

def machine(dev:torch.device) -> dict:
    "CPU, cores, torch and CUDA versions, GPU name and the date, for the results file."
    info = Path('/proc/cpuinfo').read_text().splitlines() if Path('/proc/cpuinfo').exists() else []
    cpu = next((l.split(':', 1)[1].strip() for l in info if l.startswith('model name')), platform.processor())
    cuda = dev.type == 'cuda'
    return dict(cpu=cpu, cores=len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(),
                torch=torch.__version__, cuda=torch.version.cuda if cuda else None,
                cudnn=torch.backends.cudnn.version() if cuda else None, threads=torch.get_num_threads(),
                device=str(dev), gpu=torch.cuda.get_device_name(dev) if cuda else None,
                python=platform.python_version(), date=datetime.now(timezone.utc).isoformat(timespec='seconds'))
