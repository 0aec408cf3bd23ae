module bootmatrix.local/tinyboot

go 1.24
