"""A saved model folder, laid out like a Hub model repo: config.json, the weights, a model card. Local paths only.

config  config.json both ways: the resolved declaration written, read back, and rebuilt with no code
card    the README.md model card
folder  zoo.save's and zoo.load's work on a local folder: write it whole; read it onto a device,
        a device map or a mesh
"""
