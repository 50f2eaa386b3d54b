"""Pure Flax (linen) speech encoder blocks: conv feature extractor, positional embeddings, Transformer, quantizer."""

# Logical axis names used by parameters and activations; ssl_jax/parallel/sharding.py maps them to mesh axes.
LOGICAL_AXES: tuple[str, ...] = (
    "batch",  # utterances in a batch (activations)
    "frames",  # time frames (activations)
    "embed",  # Transformer model dimension
    "mlp",  # Transformer feed-forward inner dimension
    "heads",  # attention projection output (num_heads * head_dim, split by whole heads)
    "kv",  # per-head dimension
    "conv_channels",  # output channels of the waveform conv layers
    "conv_kernel",  # kernel width of 1-D convolutions
    "codevector",  # quantizer codevector dimension
    "codebook",  # quantizer entries (num_groups * num_vars)
    "buckets",  # relative position buckets (WavLM)
)
