"""Distillation: a trajectory becomes training examples, an adapter, and a GGUF file.

The modules follow the data: ``lessons`` (examples from a trajectory), ``rehearsal``, ``train``,
``gguf`` (export for llama.cpp), ``probes``, ``remember`` (the whole path for one session) and
``queue`` (the durable job queue that runs it). Nothing here is imported eagerly: hooks import
the queue and must never pull in torch.
"""
