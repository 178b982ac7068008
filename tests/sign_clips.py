"""The tiny synthetic sign set the video tests share."""

from pathlib import Path

from keras_attn.data.synthetic_video import ensure_synthetic_videos


def tiny_sign_clips(root: Path) -> Path:
    """2 classes × 6 clips of 32 px, one signer each for train, val and test."""
    return ensure_synthetic_videos(
        root,
        num_classes=2,
        clips_per_class=6,
        num_signers=3,
        val_signers=1,
        test_signers=1,
        image_size=32,
    )
