"""Mini experts pretrained in the synthetic world, so the default MLLM starts, like every real one, from
pretrained vision encoders: the cache of built experts (cache.py), the pretraining loop (pretrain.py), the
objectives (objectives.py) and the world's labelled scenes (scenes.py)."""
