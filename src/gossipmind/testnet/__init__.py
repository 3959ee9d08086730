"""Local testnet launcher and scenarios."""
