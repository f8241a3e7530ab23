"""Network architectures (registry by name) and safetensors checkpoint I/O.

Importing the package is torch-free: `models.spec` and `models.checkpoint_header` can be used by the HTTP
edge; `models.registry`, `models.checkpoint` and the architectures import torch.
"""
