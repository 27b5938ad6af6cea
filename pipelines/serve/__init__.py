"""The live desk (`liqstream serve`): a web page that follows the streaming job (docs/adr/013)."""
