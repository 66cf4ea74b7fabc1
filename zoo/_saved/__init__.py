"""A saved model folder, laid out like a Hub model repo: config.json, the weights, a model card. Local paths only."""
