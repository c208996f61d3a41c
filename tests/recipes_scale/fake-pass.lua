-- A recipe's error text that would repaint the terminal line: printed escaped.
error("\r  all checks PASSED\27[K")
