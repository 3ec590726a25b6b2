"""Losses: KD on softened outputs, feature matching."""

from taskdistill.losses.feature import contrastive_feature_loss, cosine_feature_loss
from taskdistill.losses.kd import kd_kl_loss

__all__ = ["contrastive_feature_loss", "cosine_feature_loss", "kd_kl_loss"]
