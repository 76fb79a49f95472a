"""The command lines: absl flags in, one pipeline call, its result out. Flag parsing only.

`export_cli` is `bert-export` (and `python -m export`), `package_cli` is `bert-package`,
`verify_cli` is `bert-verify`.
"""
