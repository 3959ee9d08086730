"""The only package that imports libp2p: host adapter, gossip, sync transport, fake network."""
