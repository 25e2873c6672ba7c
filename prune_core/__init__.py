"""Layer Pruning Explorer's library: find, remove and heal redundant layers of a causal LM.

Implements Gromov et al., "The Unreasonable Ineffectiveness of the Deeper Layers" (arXiv 2403.17887).
This package never imports streamlit: every feature of the app is callable from here and from the CLI.
"""

__version__ = "0.1.0"
