"""The language: registry TOML → frozen declarations → one resolved, checked tree. No module is built here.

declarations  TOML text → frozen dataclasses, every value with its file:line
expressions   `${…}`: parsed by ast, evaluated by a whitelist walker, never eval
keymap        `weights = {…}` key maps from a foreign checkpoint onto an entry's keys
registry      names → providers (blocks, entries, ops, init functions) and where they came from
signatures    declared values checked against the blocks' and ops' signatures
resolve       an entry + overrides → the resolved tree (Block / Graph / Use) and every error at once
"""
