"""Datasets, few-shot splits, views and batches."""
