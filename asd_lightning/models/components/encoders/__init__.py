"""Pre-trained audio encoders behind the interface the methods use (``features → [N, D]`` with
``embedding_dim``): :class:`~.pretrained.PretrainedEncoder` wraps a backbone (:mod:`.beats`,
:mod:`.hf_audio`) with the fine-tuning mode (frozen, full, LoRA), the layer read and the pooling;
:mod:`.weights` finds every weight on the local disk, never on the network."""
