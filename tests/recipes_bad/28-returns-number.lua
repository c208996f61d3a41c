-- returning something else
return 42
