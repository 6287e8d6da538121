"""Webhooks, the pure part: endpoint URLs and the addresses they may reach, Standard
Webhooks signatures and secrets, the retry schedule, and secrets sealed at rest."""
