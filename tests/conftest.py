import os

import torch

from rslad_kit import gpu

# cuBLAS reads this when CUDA starts; tests that train with deterministic=True after another test has
# started CUDA need it set already (rslad_kit.gpu.set_deterministic).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", gpu.CUBLAS_WORKSPACE)
torch.set_num_threads(1)
