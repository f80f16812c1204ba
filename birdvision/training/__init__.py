"""Training: the LightningModule (module), staged fine-tuning and weight averaging (finetune), the learning-rate
range test (lr_find), and head-only training on cached embeddings (embeddings)."""
