"""Triton kernels, installed as ``draw_megatron.kernels``; each with a PyTorch reference."""
