"""Neural generative models written as Pyro programs."""
