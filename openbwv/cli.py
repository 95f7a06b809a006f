def main(argv=None):
    print("bwv")
