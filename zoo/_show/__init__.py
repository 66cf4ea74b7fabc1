"""A model shown to people: zoo.summary's table and zoo.draw's picture of the dataflow."""
