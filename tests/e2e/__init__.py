"""Through ms-swift itself: the real `swift sft` command, its dataset loading, the CLI, the examples."""
