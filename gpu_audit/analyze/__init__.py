"""The analysis: the store, pricing and token logs in; findings out."""
