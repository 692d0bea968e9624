from mmcompress.cli import main

main()
