"""Application layer: the command line (`cli`: parsers, flag types, the resolve steps that turn
parsed flags into the libraries' frozen configs), the browser app (`webapp`) and its HTTP client
(`app_client`). The only layer that sees an argparse Namespace; may import every other layer.
"""
