"""Application layer: the command line (`cli`: parsers and flag types; `explain_cli`: the explanation
scripts' flags; `configs`: the resolve steps that turn parsed flags into the libraries' frozen configs;
`demo_sheet`: the demo faces' contact sheet), the browser app (`webapp`) and its HTTP client
(`app_client`). The only layer that sees an argparse Namespace; may import every other layer.
"""
