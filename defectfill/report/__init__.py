"""Reports of downstream comparisons: table + verdict (`table`), plots (`plots`), HTML page (`html`)."""
