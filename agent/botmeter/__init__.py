"""botmeter: an on-premises usage meter for voice bots on Asterisk.

Kept import-free: every command starts here, `botmeter --help` and `botmeter-agi` (run once per
bot signal) included; each command imports what it needs when it runs.
"""

#: the environment variable naming the configuration file (`botmeter.config` reads it)
ENV_VAR = "BOTMETER_CONFIG"
