"""The hypernetwork: a session becomes an adapter in one forward pass.

Gradient steps per session cost minutes on a CPU; a network trained once, offline, on many
generated sessions can write the adapter directly. The frozen base model reads the session
(`encode`: its compiled lessons, or the redacted trajectory text, mean-pooled per layer), a
small Perceiver pools those states into one latent per LoRA rank row, and one shared head
writes the A row and B column of every target module of every layer (`network`). The
adapter acts on the frozen base through forward hooks (`apply`), so meta-training (`train`)
backpropagates the lesson answers' cross-entropy straight into the network. `generate`
turns a trajectory into an ordinary PEFT adapter folder; `checkpoint` stores the network.
The design and what has been measured: docs/hypernetwork.md.
"""
