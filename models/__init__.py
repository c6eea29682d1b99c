"""Ready-made recipes: one module each (model + data + known answer), listed by `registry`."""
