"""Losses: KD on softened outputs, feature matching."""

from taskdistill.losses.kd import kd_kl_loss

__all__ = ["kd_kl_loss"]
