"""Implicit generative models (GANs): no density, judged by their samples.

Example:
    >>> import probgen.gan
    >>> probgen.gan.__name__
    'probgen.gan'
"""
