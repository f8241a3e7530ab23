"""Network architectures (registry by name) and safetensors checkpoint I/O."""
