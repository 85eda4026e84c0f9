"""The IMTalker networks: pure nn.Modules, no file I/O."""
