"""parakeet-coreml: NeMo Parakeet-TDT to Core ML exporters."""
