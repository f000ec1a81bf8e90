"""The pack's ComfyUI nodes (V3 schema): thin classes that validate inputs, call wan_core and
shape outputs. Each node module lists its classes here."""

NODE_LIST: list = []
