"""In-process tracing of a PyTorch program, before any nsys profile is read.

``align.trace.modules`` records every ``nn.Module`` call (name, class, shapes, depth, time) and,
under ``torch.profiler``, the kernels or CPU ops each module launched. ``align.trace.topk`` records
which cached tokens each DSA decode step reads.
"""
