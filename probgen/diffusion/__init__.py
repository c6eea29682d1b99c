"""Diffusion models (DDPM/DDIM) with honest variational likelihood bounds.

Example:
    >>> import probgen.diffusion
    >>> probgen.diffusion.__name__
    'probgen.diffusion'
"""
