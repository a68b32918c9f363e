"""Text as a semantic modality: an offline sentence encoder and the general zero-shot model.

    encode_texts(["zebra", "a striped animal in the water"])   # (2, 384) float32, unit rows
    encode_vocabulary(class_names, template="a photo of a {}") # cached on disk by content hash

Nothing here imports torch or sentence-transformers until an encoder is actually needed.
"""
from .encoder import (DIM, ENCODER_PACKAGE, EncoderNotInstalledError, TextEncoder, apply_template, encode_texts,
                      encode_vocabulary, encoder_id, encoder_loaded, get_encoder, model_path, set_offline,
                      vocabulary_key)

__all__ = ["DIM", "ENCODER_PACKAGE", "EncoderNotInstalledError", "TextEncoder", "apply_template", "encode_texts",
           "encode_vocabulary", "encoder_id", "encoder_loaded", "get_encoder", "model_path", "set_offline",
           "vocabulary_key"]
