from mental_edge.cli import main

main()
