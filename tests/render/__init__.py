"""lightning_xai.render: tensors to Agg figures."""
