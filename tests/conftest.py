import os

import torch

# cuBLAS reads this when CUDA starts; tests that train with deterministic=True after another test has
# started CUDA need it set already (rslad_kit.gpu.set_deterministic).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
torch.set_num_threads(1)
