"""Plotly figures. The only part of headlens that imports plotly.

Every function takes result objects and returns a ``go.Figure``; none shows or saves,
except :func:`write_html`, which writes a self-contained page that opens offline.
"""

from headlens.plots.common import head_heatmap, write_html

__all__ = ["head_heatmap", "write_html"]
