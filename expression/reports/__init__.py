"""Reports layer: explanation figures for images (`explain_figures`) and the faithfulness report
(`explanation_report`). Imports `expression.core` and `expression.inference`.
"""
