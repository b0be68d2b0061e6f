"""The bot's signals over AGI: a FastAGI server (`fastagi`) and a classic AGI script (`agi_script`).

Kept import-free so the AGI script, which runs once per signal, starts fast.
"""
