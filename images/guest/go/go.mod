module bootmatrix.local/guest

go 1.24
