"""Question "dispatch_10": one hook call with 10 plugin(s) through the host against bare pluggy."""

from _dispatch_bench import main

if __name__ == "__main__":
    main(10)
